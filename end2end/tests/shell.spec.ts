import { test, expect } from '@playwright/test';
import { hydrated, signIn, PASSWORD } from './helpers';

test('signing in, and being refused with a wrong password', async ({ page }) => {
  await page.goto('/p/default/triggers');
  await expect(page).toHaveURL(/\/login$/);
  await hydrated(page);
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert')).toHaveText('wrong user name or password', { timeout: 20_000 });
  await page.screenshot({ path: 'test-results/screenshots/sign-in.png' });
  await signIn(page);
  await expect(page.locator('footer')).toContainText(/Herald \d+\.\d+\.\d+/);
  expect(PASSWORD).not.toBe('');
});

test('hydration works: the menu opens without a page reload', async ({ page }) => {
  await signIn(page);
  await page.setViewportSize({ width: 800, height: 700 });
  await page.evaluate(() => { (window as any).__heraldMarker = 'still-here'; });
  const toggle = page.getByRole('button', { name: 'Menu' });
  await expect(page.locator('#main-nav')).toBeHidden();
  await toggle.click();
  await expect(toggle).toHaveAttribute('aria-expanded', 'true');
  await expect(page.locator('#main-nav')).toBeVisible();
  await page.getByRole('link', { name: 'Event Logs' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Logs');
  expect(await page.evaluate(() => (window as any).__heraldMarker)).toBe('still-here');
});

test('health endpoints answer', async ({ request }) => {
  expect((await request.get('/healthz')).status()).toBe(200);
  const ready = await request.get('/readyz');
  expect(ready.status()).toBe(200);
  expect(await ready.json()).toEqual({ status: 'ready' });
});

test('pages carry security headers, and the CSP nonce lets hydration run', async ({ request }) => {
  const resp = await request.get('/login');
  const headers = resp.headers();
  expect(headers['x-frame-options']).toBe('DENY');
  expect(headers['referrer-policy']).toBe('same-origin');
  expect(headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  const csp = headers['content-security-policy'];
  const nonce = /'nonce-([^']+)'/.exec(csp)?.[1];
  expect(nonce, csp).toBeTruthy();
  expect(csp).not.toContain("'unsafe-inline' 'wasm");
  const html = await resp.text();
  const inline = [...html.matchAll(/<script(?![^>]*\bsrc=)([^>]*)>/g)].map((m) => m[1]);
  expect(inline.length).toBeGreaterThan(0);
  for (const attrs of inline) expect(attrs).toContain(`nonce="${nonce}"`);
});

test('a server function without a session is refused', async ({ request, baseURL }) => {
  const resp = await request.post('/api/list_triggers', {
    form: { project: 'default' },
    headers: { Origin: baseURL! },
  });
  expect(resp.status()).toBe(401);
  expect(await resp.text()).toContain('SignedOut');
});

test('the first visit to the sign-in page transfers under 1 MB, and a second visit reuses the bundle', async ({ page, context }) => {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: false });
  const responses = new Map<string, { url: string; headers: Record<string, string>; fromCache: boolean }>();
  const bytes = new Map<string, number>();
  cdp.on('Network.responseReceived', (e: any) => {
    const headers = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
    responses.set(e.requestId, { url: e.response.url, headers, fromCache: e.response.fromDiskCache || e.response.fromMemoryCache });
  });
  cdp.on('Network.loadingFinished', (e: any) => bytes.set(e.requestId, e.encodedDataLength));
  await page.goto('/login');
  await hydrated(page);
  await page.waitForLoadState('networkidle');
  const total = [...bytes.values()].reduce((a, b) => a + b, 0);
  const wasm = [...responses.entries()].find(([, r]) => r.url.endsWith('.wasm'));
  expect(wasm, 'the page loaded a wasm bundle').toBeTruthy();
  const [wasmId, wasmResponse] = wasm!;
  console.log(`first visit to /login: ${total} bytes in ${bytes.size} responses; wasm ${bytes.get(wasmId)} bytes (${wasmResponse.headers['content-encoding']})`);
  expect(wasmResponse.url, 'the bundle has a fingerprinted name').toMatch(/\/pkg\/herald\.[0-9a-f]{16}\.wasm$/);
  expect(wasmResponse.headers['content-encoding']).toBe('br');
  expect(wasmResponse.headers['cache-control']).toBe('public, max-age=31536000, immutable');
  expect(total).toBeLessThan(1_000_000);

  // A second visit downloads the page, not the bundle.
  const before = new Set(bytes.keys());
  await page.goto('/login');
  await hydrated(page);
  await page.waitForLoadState('networkidle');
  const again = [...bytes.entries()].filter(([id]) => !before.has(id));
  const wasmAgain = again.find(([id]) => responses.get(id)?.url.endsWith('.wasm'));
  expect(wasmAgain && responses.get(wasmAgain[0])!.fromCache, 'the wasm came from the browser cache').toBeTruthy();
  const second = again.reduce((a, [, n]) => a + n, 0);
  console.log(`second visit to /login: ${second} bytes`);
  expect(second).toBeLessThan(100_000);
});

test('a project that does not exist is not found, and stores nothing', async ({ page, baseURL }) => {
  await signIn(page);
  const call = (endpoint: string, form: Record<string, string>) =>
    page.request.post(`/api/${endpoint}`, { form, headers: { origin: new URL(baseURL!).origin } });
  const fired = await call('fire_event', { project: 'no-such-project', event_type: 'evt', data: '1', synchronous: 'false' });
  expect(fired.status()).toBe(404);
  expect(await fired.text()).toContain("unknown project 'no-such-project'");
  const summary = await call('log_summary', { project: 'no-such-project', window_hours: '1' });
  expect(summary.status()).toBe(404);
  // The page says so rather than showing an empty project.
  await page.goto('/p/no-such-project/logs');
  await hydrated(page);
  await expect(page.getByText("unknown project 'no-such-project'").first()).toBeVisible();
});
