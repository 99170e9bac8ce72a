import { test, expect } from '@playwright/test';
import { addTrigger, hydrated, signIn, startReceiver } from './helpers';

test('failed deliveries gather in Dead letters, and one click replays the group', async ({ page }) => {
  // The receiver fails the first two deliveries; with no retries both event logs fail.
  const receiver = await startReceiver({ ok: true }, 2);
  // Other tests leave failed deliveries of their own; this one's start after this.
  const started = new Date(Date.now() - 1000);
  try {
    await signIn(page);
    await addTrigger(page, 'dlq-hook', 'dlq-event', receiver.url, '0');
    const row = page.locator('tr[data-trigger="dlq-hook"]');
    for (const n of [1, 2]) {
      await row.getByRole('button', { name: 'Trigger' }).click();
      const modal = page.getByRole('form', { name: 'Trigger event' });
      await modal.getByLabel('Data (JSON)').fill(`{"n": ${n}}`);
      await modal.getByRole('button', { name: 'Trigger' }).click();
      await expect(modal.locator('code.event-id')).toBeVisible();
      await page.keyboard.press('Escape');
      await page.goto('/p/default/triggers');
      await hydrated(page);
    }
    await expect.poll(() => receiver.received.length).toBe(2);

    await page.getByRole('link', { name: 'Dead Letters' }).click();
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Dead letters');
    await hydrated(page);
    const group = page.locator('table.dead-letters tr[data-trigger="dlq-hook"]');
    await expect(async () => {
      await page.reload();
      await expect(group).toContainText('2', { timeout: 1000 });
    }).toPass({ timeout: 15_000 });
    await expect(group).toContainText('HTTP 500');
    await page.screenshot({ path: 'test-results/screenshots/dead-letters.png', fullPage: true });

    // A time range: one that starts tomorrow holds none of them; one that starts
    // with this test holds both, and replays them all at once.
    await hydrated(page);
    const range = page.getByRole('form', { name: 'Time range' });
    const day = 24 * 3600 * 1000;
    // With no range, replaying everything at once is not offered.
    await expect(range.getByRole('button', { name: 'Replay all in this range' })).toBeDisabled();
    await range.getByLabel('From (UTC)').fill(new Date(Date.now() + day).toISOString());
    await range.getByLabel('From (UTC)').press('Tab');
    await expect(page.getByText('No dead letters')).toBeVisible();
    await expect(group).toHaveCount(0);
    await range.getByLabel('From (UTC)').fill(started.toISOString());
    await range.getByLabel('From (UTC)').press('Tab');
    await expect(group).toContainText('2');
    await range.getByRole('button', { name: 'Replay all in this range' }).click();
    await expect(page.getByRole('status')).toContainText('Replayed 2 event logs');
    await expect.poll(() => receiver.received.length, { timeout: 15_000 }).toBe(4);
    await expect(async () => {
      await page.reload();
      await expect(group).toHaveCount(0, { timeout: 1000 });
    }).toPass({ timeout: 15_000 });

    // Leave the project as the other tests expect it: no triggers.
    await page.goto('/p/default/triggers');
    await hydrated(page);
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Confirm delete' }).click();
    await expect(row).toHaveCount(0);
  } finally {
    receiver.close();
  }
});

test('history retention is set in Settings and kept', async ({ page }) => {
  await signIn(page);
  await page.getByRole('link', { name: 'Settings' }).click();
  await hydrated(page);
  const form = page.getByRole('form', { name: 'History retention' });
  const days = form.getByLabel('Keep history for (days)');
  await expect(days).toHaveValue('30');
  await days.fill('7');
  await form.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'history is kept for 7 days' })).toBeVisible();
  await page.reload();
  await hydrated(page);
  await expect(days).toHaveValue('7');
  // Back to the default for the tests that follow.
  await days.fill('30');
  await form.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByRole('status').filter({ hasText: 'history is kept for 30 days' })).toBeVisible();
});
