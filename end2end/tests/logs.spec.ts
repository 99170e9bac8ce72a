import { test, expect } from '@playwright/test';
import { addTrigger, signIn, startReceiver } from './helpers';

test('find a failed delivery in Event Logs, open it, and redeliver it', async ({ page }) => {
  const receiver = await startReceiver({ ok: true }, 1);
  try {
    await signIn(page);
    await page.screenshot({ path: 'test-results/screenshots/event-triggers-empty.png', fullPage: true });
    await addTrigger(page, 'billing-hook', 'invoice-paid', receiver.url, '0');

    // Fire asynchronously; the receiver fails the first delivery and retries are 0.
    await page.locator('tr[data-trigger="billing-hook"]').getByRole('button', { name: 'Trigger' }).click();
    const modal = page.getByRole('form', { name: 'Trigger event' });
    await modal.getByLabel('Data (JSON)').fill('{"invoice": 7}');
    await modal.getByRole('button', { name: 'Trigger' }).click();
    await expect(modal.locator('code.event-id')).toBeVisible();
    await expect.poll(() => receiver.received.length).toBe(1);
    const eventId = await modal.locator('code.event-id').innerText();
    await modal.getByRole('link', { name: 'See its event logs' }).click();
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Logs');
    // The link filters the history down to this event.
    await expect(page.getByLabel('Event ID')).toHaveValue(eventId);
    await expect(page.locator('table.logs tbody tr')).toHaveCount(1);

    // Filters go into the URL; the failed row shows up once the attempt is recorded.
    await page.getByLabel('Trigger').fill('billing-hook');
    await page.getByLabel('Trigger').press('Enter');
    await page.getByLabel('Trigger').blur();
    await expect(page).toHaveURL(/trigger=billing-hook/);
    await page.getByLabel('Status').selectOption('failed');
    await expect(page).toHaveURL(/status=failed/);
    const row = page.locator('table.logs tbody tr').first();
    await expect(async () => {
      await page.getByRole('button', { name: 'Refresh' }).click();
      await expect(row).toContainText('failed', { timeout: 1000 });
    }).toPass({ timeout: 15_000 });
    await expect(row).toContainText('billing-hook');
    await expect(page.locator('.count[data-status="failed"]')).not.toHaveText('0');
    await expect(page.locator('.chart svg')).toBeVisible();
    await page.screenshot({ path: 'test-results/screenshots/event-logs.png', fullPage: true });

    // The detail page: data, then every attempt.
    await row.getByRole('link').click();
    await expect(page.getByRole('heading', { level: 1 })).toContainText('Event log');
    await expect(page.locator('pre.result')).toContainText('"invoice": 7');
    await expect(page.locator('.attempt')).toHaveCount(1);
    await expect(page.locator('.attempt').first()).toContainText('HTTP 500');
    await expect(page.locator('.attempt .response').first()).toContainText('receiver is down');
    await page.screenshot({ path: 'test-results/screenshots/event-log-detail.png', fullPage: true });

    // Redeliver: a fresh attempt, which the receiver now accepts.
    await page.getByRole('button', { name: 'Redeliver' }).click();
    await expect.poll(() => receiver.received.length).toBe(2);
    await expect(async () => {
      await page.reload();
      await expect(page.locator('.facts [data-status]')).toHaveText('processed', { timeout: 1000 });
    }).toPass({ timeout: 15_000 });
    await expect(page.locator('.attempt')).toHaveCount(2);
  } finally {
    receiver.close();
  }
});
