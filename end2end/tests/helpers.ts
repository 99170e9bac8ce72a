import { expect, Page } from '@playwright/test';
import http from 'node:http';
import { AddressInfo } from 'node:net';

export const PASSWORD = process.env.HERALD_ADMIN_PASSWORD ?? 'e2e-password';

/** Waits until the wasm has hydrated the page, so that clicks reach their handlers. */
export async function hydrated(page: Page) {
  await expect(page.locator('html[data-hydrated="true"]')).toHaveCount(1, { timeout: 20_000 });
}

/** Signs in through the form. */
export async function signIn(page: Page) {
  await page.goto('/login');
  await hydrated(page);
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(/\/p\/default\/triggers/, { timeout: 20_000 });
  await hydrated(page);
  await expect(page.getByRole('heading', { level: 1, name: 'Event Triggers' })).toBeVisible();
}

/** A webhook receiver on loopback that answers {"response": ...}. */
export async function startReceiver(answer: unknown, failFirst = 0): Promise<{ url: string; received: any[]; close: () => void }> {
  const received: any[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(JSON.parse(body || 'null'));
      if (received.length <= failFirst) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('receiver is down');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ response: answer }));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, received, close: () => server.close() };
}

/** Adds a trigger through the Add form. */
export async function addTrigger(page: Page, name: string, type: string, url: string, retries: string) {
  await page.getByRole('button', { name: 'Add', exact: true }).first().click();
  const form = page.getByRole('form', { name: 'Trigger form' });
  await form.getByLabel('Trigger Name').fill(name);
  await form.getByLabel('Type').fill(type);
  await form.getByLabel('Webhook URL').fill(url);
  await form.getByText('Advanced settings').click();
  await form.getByLabel('Retries').fill(retries);
  await form.getByRole('button', { name: 'Save' }).click();
  await expect(page.locator(`tr[data-trigger="${name}"]`)).toBeVisible();
}
