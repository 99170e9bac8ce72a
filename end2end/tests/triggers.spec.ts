import { test, expect } from '@playwright/test';
import { signIn, startReceiver } from './helpers';

test('add a trigger with a validation error, fix it, fire sync and async events, then delete it', async ({ page }) => {
  const receiver = await startReceiver({ greeting: 'hello from the receiver' });
  try {
    await signIn(page);

    await page.getByRole('button', { name: 'Add', exact: true }).click();
    const form = page.getByRole('form', { name: 'Trigger form' });
    await form.getByLabel('Trigger Name').fill('welcome-email');
    await form.getByLabel('Type').fill('sent-email');
    await form.getByLabel('Webhook URL').fill('ftp://example.com/hook');
    await form.getByText('Advanced settings').click();
    await expect(form.getByLabel('Retries')).toHaveValue('3');
    await expect(form.getByLabel('Timeout (ms)')).toHaveValue('5000');
    await form.getByRole('button', { name: 'Save' }).click();
    // The error is next to the URL field, and what was typed stays.
    await expect(form.locator('label', { hasText: 'Webhook URL' }).locator('.field-error')).toContainText('http or https');
    await expect(form.getByLabel('Trigger Name')).toHaveValue('welcome-email');
    await form.getByLabel('Webhook URL').fill(receiver.url);
    await form.getByRole('button', { name: 'Save' }).click();
    const row = page.locator('tr[data-trigger="welcome-email"]');
    await expect(row).toBeVisible();
    await expect(row).toContainText('sent-email');
    await expect(row).toContainText('5000 ms');
    await page.screenshot({ path: 'test-results/screenshots/event-triggers.png', fullPage: true });

    // Synchronous: the receiver's `response` appears in the modal.
    await row.getByRole('button', { name: 'Trigger' }).click();
    const modal = page.getByRole('form', { name: 'Trigger event' });
    await expect(modal.getByLabel('Type')).toHaveValue('sent-email');
    await modal.getByLabel('Data (JSON)').fill('{"to": "user1@email.com"');
    await expect(modal.locator('.field-error')).toContainText('line 1');
    await expect(modal.getByRole('button', { name: 'Trigger' })).toBeDisabled();
    await modal.getByLabel('Data (JSON)').fill('{"to": "user1@email.com"}');
    await modal.getByLabel('Trigger event synchronously').check();
    await modal.getByRole('button', { name: 'Trigger' }).click();
    await expect(modal.locator('pre.result')).toContainText('hello from the receiver');
    await expect(modal.locator('.answer table')).toContainText('welcome-email');
    await expect(modal.locator('.answer table')).toContainText('200');
    expect(receiver.received.at(-1).data).toEqual({ to: 'user1@email.com' });
    await page.screenshot({ path: 'test-results/screenshots/trigger-modal.png' });

    // Asynchronous: the event id, with a link to its event logs.
    await modal.getByLabel('Trigger event synchronously').uncheck();
    await modal.getByRole('button', { name: 'Trigger' }).click();
    await expect(modal.locator('code.event-id')).toHaveText(/^[0-9a-f-]{36}$/);
    await expect(modal.getByRole('link', { name: 'See its event logs' })).toBeVisible();
    await expect.poll(() => receiver.received.length).toBe(2);
    await modal.getByRole('button', { name: 'Close' }).click();

    // Disable with one click.
    await row.getByRole('switch').click();
    await expect(row.getByRole('switch')).toHaveAttribute('aria-checked', 'false');

    // Delete, with confirmation.
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Confirm delete' }).click();
    await expect(row).toHaveCount(0);
  } finally {
    receiver.close();
  }
});
