import { defineConfig } from '@playwright/test';

// The server is started by scripts/e2e.sh, which passes its address in HERALD_URL.
// Browsers cannot be downloaded here, so the system Chromium is used.
export default defineConfig({
  testDir: './tests',
  timeout: 30_000,
  retries: 0,
  workers: 1,
  reporter: [['list']],
  outputDir: 'test-results',
  use: {
    baseURL: process.env.HERALD_URL ?? 'http://127.0.0.1:3000',
    trace: 'off',
    screenshot: 'only-on-failure',
  },
  projects: [
    {
      name: 'chromium',
      use: {
        browserName: 'chromium',
        launchOptions: {
          executablePath: '/usr/bin/chromium',
          args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
            '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
        },
      },
    },
  ],
});
