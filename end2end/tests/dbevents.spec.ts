import { test, expect } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { hydrated, signIn, startReceiver } from './helpers';

/** Runs SQL on Herald's own database (the alias `default`), as an application would. */
function sql(statement: string) {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set: run the tests through scripts/with-postgres.sh');
  execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-q', '-c', statement], {
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
  });
}

test('add a Database trigger from the form, insert a row, see the webhook and the event log', async ({ page }) => {
  sql('DROP TABLE IF EXISTS e2e_orders, e2e_lines');
  sql('CREATE TABLE e2e_orders (id int PRIMARY KEY, item text NOT NULL)');
  sql('CREATE TABLE e2e_lines (line text)');
  const receiver = await startReceiver({ ok: true });
  try {
    await signIn(page);
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    const form = page.getByRole('form', { name: 'Trigger form' });
    await form.getByLabel('Trigger Name').fill('order-created');
    await form.locator('select[name="source"]').selectOption('database');
    await expect(form.locator('select[name="db"]')).toHaveValue('default');
    await form.getByLabel('Webhook URL').fill(receiver.url);

    // Saving without a table names the problem next to the Table field.
    await form.getByRole('button', { name: 'Save' }).click();
    await expect(form.locator('label', { hasText: 'Table' }).locator('.field-error')).toContainText('is required');

    // The table list comes from the database; Herald's own tables are not in it.
    const table = form.locator('select[name="table"]');
    await expect(table.locator('option[value="public.e2e_orders"]')).toHaveCount(1);
    await expect(table.locator('option[value="public.event_logs"]')).toHaveCount(0);
    // A table without a primary key is allowed, with a warning.
    await table.selectOption('public.e2e_lines');
    await expect(form.locator('.field-warning')).toContainText('no primary key');
    await table.selectOption('public.e2e_orders');
    await expect(form.locator('.field-warning')).toHaveCount(0);
    await form.locator('select[name="type"]').selectOption('DB_INSERT');
    await page.screenshot({ path: 'test-results/screenshots/database-trigger-form.png' });
    await form.getByRole('button', { name: 'Save' }).click();

    const row = page.locator('tr[data-trigger="order-created"]');
    await expect(row).toContainText('database');
    await expect(row).toContainText('DB_INSERT');
    // Database triggers fire on real changes, not from the Trigger button.
    await expect(row.getByRole('button', { name: 'Trigger' })).toBeDisabled();

    // An application inserts a row: the webhook receives the documented data.
    sql("INSERT INTO e2e_orders VALUES (7, 'lamp')");
    await expect.poll(() => receiver.received.length, { timeout: 15_000 }).toBe(1);
    expect(receiver.received[0].type).toBe('DB_INSERT');
    expect(receiver.received[0].data).toEqual({
      db: 'default', col: 'public.e2e_orders', doc: { id: 7, item: 'lamp' }, find: { id: 7 },
    });

    // The event log shows it like any other event.
    await page.goto('/p/default/logs');
    await hydrated(page);
    const logRow = page.locator('table.logs tbody tr', { hasText: 'order-created' }).first();
    await expect(logRow).toContainText('DB_INSERT');
    await expect(logRow).toContainText('processed');

    // Editing keeps the source settings.
    await page.goto('/p/default/triggers');
    await hydrated(page);
    await row.getByRole('button', { name: 'Edit' }).click();
    await expect(form.locator('select[name="table"]')).toHaveValue('public.e2e_orders');
    await form.getByRole('button', { name: 'Cancel' }).click();

    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Confirm delete' }).click();
    await expect(row).toHaveCount(0);
  } finally {
    receiver.close();
    sql('DROP TABLE IF EXISTS e2e_orders, e2e_lines');
  }
});
