import { test, expect } from '@playwright/test';
import { signIn, startReceiver } from './helpers';

test('set a rate limit and max in flight in the form, and see a dead receiver open the circuit', async ({ page }) => {
  const dead = await startReceiver({}, 1_000_000);
  try {
    await signIn(page);

    // Limits are set in the Add form's advanced settings, and shown again on Edit.
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    const form = page.getByRole('form', { name: 'Trigger form' });
    await form.getByLabel('Trigger Name').fill('flaky-hook');
    await form.getByLabel('Type').fill('flaky');
    await form.getByLabel('Webhook URL').fill(dead.url);
    await form.getByText('Advanced settings').click();
    await expect(form.getByLabel('Max in flight')).toHaveValue('256');
    await form.getByLabel('Rate limit').fill('0');
    await form.getByLabel('Retries').fill('0');
    await form.getByRole('button', { name: 'Save' }).click();
    await expect(form.locator('label', { hasText: 'Rate limit' }).locator('.field-error')).toContainText('between 0.01 and 100000');
    await form.getByLabel('Rate limit').fill('50');
    await form.getByLabel('Max in flight').fill('4');
    await form.getByRole('button', { name: 'Save' }).click();
    const row = page.locator('tr[data-trigger="flaky-hook"]');
    await expect(row).toBeVisible();
    await row.getByRole('button', { name: 'Edit' }).click();
    await form.getByText('Advanced settings').click();
    await expect(form.getByLabel('Rate limit')).toHaveValue('50');
    await expect(form.getByLabel('Max in flight')).toHaveValue('4');
    await form.getByRole('button', { name: 'Cancel' }).click();

    // Every attempt fails: after 20 the circuit opens, and the table says so and why.
    await row.getByRole('button', { name: 'Trigger' }).click();
    const modal = page.getByRole('form', { name: 'Trigger event' });
    for (let i = 1; i <= 20; i++) {
      await modal.getByRole('button', { name: 'Trigger' }).click();
      await expect.poll(() => dead.received.length).toBeGreaterThanOrEqual(i);
    }
    await modal.getByRole('button', { name: 'Close' }).click();
    await expect(async () => {
      await page.reload();
      await expect(row.locator('.badge', { hasText: 'Circuit open' })).toBeVisible({ timeout: 1000 });
    }).toPass({ timeout: 20_000 });
    await expect(row.locator('td.health')).toContainText('of the last');
    await expect(row.locator('td.health')).toContainText('20 · 0.0 % ok');
    // Further events wait: the dead receiver hears nothing more but the probes.
    await row.getByRole('button', { name: 'Trigger' }).click();
    await modal.getByRole('button', { name: 'Trigger' }).click();
    await expect(modal.locator('code.event-id')).toBeVisible();
    await modal.getByRole('button', { name: 'Close' }).click();
    await page.waitForTimeout(1500);
    expect(dead.received.length).toBe(20);
    await page.screenshot({ path: 'test-results/screenshots/circuit-open.png', fullPage: true });

    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Confirm delete' }).click();
    await expect(row).toHaveCount(0);
  } finally {
    dead.close();
  }
});
