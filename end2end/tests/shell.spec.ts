import { test, expect } from '@playwright/test';

test('the shell renders with navigation and the version', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('header .brand')).toContainText('Herald');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Triggers');
  await expect(page.locator('footer')).toContainText(/Herald \d+\.\d+\.\d+/);
  await page.screenshot({ path: 'test-results/screenshots/event-triggers.png', fullPage: true });
});

test('hydration works: the menu opens without a page reload', async ({ page }) => {
  await page.setViewportSize({ width: 800, height: 700 });
  await page.goto('/');
  // A marker on window survives only if the page is not reloaded.
  await page.evaluate(() => { (window as any).__heraldMarker = 'still-here'; });
  const toggle = page.getByRole('button', { name: 'Menu' });
  const nav = page.locator('#main-nav');
  await expect(nav).toBeHidden();
  // Until the wasm has hydrated, clicks do nothing: retry the click until it takes.
  await expect(async () => {
    await toggle.click();
    await expect(toggle).toHaveAttribute('aria-expanded', 'true', { timeout: 500 });
  }).toPass({ timeout: 15_000 });
  await expect(nav).toBeVisible();
  expect(await page.evaluate(() => (window as any).__heraldMarker)).toBe('still-here');
});

test('client-side navigation reaches Event Logs', async ({ page }) => {
  await page.goto('/');
  await page.evaluate(() => { (window as any).__heraldMarker = 'still-here'; });
  await expect(async () => {
    await page.getByRole('link', { name: 'Event Logs' }).click();
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Logs', { timeout: 500 });
  }).toPass({ timeout: 15_000 });
  await expect(page).toHaveURL(/\/logs$/);
  await page.screenshot({ path: 'test-results/screenshots/event-logs.png', fullPage: true });
});

test('health endpoints answer', async ({ request }) => {
  expect((await request.get('/healthz')).status()).toBe(200);
  const ready = await request.get('/readyz');
  expect(ready.status()).toBe(200);
  expect(await ready.json()).toEqual({ status: 'ready' });
});

test('pages carry security headers, and the CSP nonce lets hydration run', async ({ request }) => {
  const resp = await request.get('/');
  const headers = resp.headers();
  expect(headers['x-frame-options']).toBe('DENY');
  expect(headers['referrer-policy']).toBe('same-origin');
  expect(headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  const csp = headers['content-security-policy'];
  const nonce = /'nonce-([^']+)'/.exec(csp)?.[1];
  expect(nonce, csp).toBeTruthy();
  expect(csp).not.toContain("script-src 'self' 'unsafe-inline'");
  // Every inline script on the page carries the nonce.
  const html = await resp.text();
  const inline = [...html.matchAll(/<script(?![^>]*\bsrc=)([^>]*)>/g)].map((m) => m[1]);
  expect(inline.length).toBeGreaterThan(0);
  for (const attrs of inline) expect(attrs).toContain(`nonce="${nonce}"`);
});
