import { test, expect } from '@playwright/test';
import { addTrigger, signIn, startReceiver } from './helpers';

test('Event Logs: short distinct ids with copy, rows open on click, a date-time picker, and a chart with a time axis and hover values', async ({ page, context }) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write']);
  const receiver = await startReceiver({ ok: true });
  try {
    await signIn(page);
    await addTrigger(page, 'ux-hook', 'ux-type', receiver.url, '0');
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      await page.locator('tr[data-trigger="ux-hook"]').getByRole('button', { name: 'Trigger' }).click();
      const modal = page.getByRole('dialog', { name: 'Trigger event' });
      await modal.getByRole('button', { name: 'Trigger', exact: true }).click();
      await expect(modal.locator('code.event-id')).toBeVisible();
      ids.push(await modal.locator('code.event-id').innerText());
      await page.keyboard.press('Escape');
      await expect(modal).toHaveCount(0);
    }
    await expect.poll(() => receiver.received.length).toBe(2);

    await page.getByRole('link', { name: 'Event Logs' }).click();
    await page.getByLabel('Trigger', { exact: true }).fill('ux-hook');
    await page.getByLabel('Trigger', { exact: true }).press('Enter');
    await expect(page).toHaveURL(/trigger=ux-hook/);
    const rows = page.locator('table.logs tbody tr');
    await expect(rows).toHaveCount(2);

    // Ids: the random tail, different for the two events; the full id on hover.
    const shown = await rows.locator('td.event-id code').allInnerTexts();
    expect(shown[0]).not.toEqual(shown[1]);
    for (const [i, text] of shown.entries()) {
      const full = await rows.nth(i).locator('td.event-id a').getAttribute('title');
      expect(ids).toContain(full);
      expect(text).toBe(`…${full!.slice(-8)}`);
    }
    // Copy puts the full id on the clipboard.
    const first = rows.first();
    const firstId = (await first.locator('td.event-id a').getAttribute('title'))!;
    await first.getByRole('button', { name: `Copy ${firstId}` }).click();
    await expect(first.getByRole('button', { name: `Copy ${firstId}` })).toHaveText('Copied');
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(firstId);

    // The chart: a time axis, and the counts of the bar under the pointer.
    await page.getByRole('button', { name: '1 h' }).click();
    await expect(page).toHaveURL(/window=1/);
    const ticks = page.locator('.chart text.tick');
    await expect(ticks.first()).toHaveText(/^\d\d:\d\d$/);
    expect(await ticks.count()).toBeGreaterThanOrEqual(4);
    const lastBar = page.locator('.chart g.bar').last();
    const counts = /(\d+ processed, \d+ failed)/.exec(await lastBar.locator('title').textContent() ?? '')![1];
    expect(counts).not.toBe('0 processed, 0 failed');
    await lastBar.hover();
    await expect(page.locator('.chart .readout')).toContainText(`UTC: ${counts}`);
    await page.mouse.move(0, 0);
    await expect(page.locator('.chart .readout')).toContainText('Point at a bar');

    // The picker fills the typed filter, in UTC; a typed date works too.
    await page.getByLabel('Pick the from date and time (UTC)').fill('2020-01-02T03:04:05');
    await expect(page).toHaveURL(/from=2020-01-02T03%3A04%3A05Z|from=2020-01-02T03:04:05Z/);
    await expect(page.getByLabel('From (UTC)')).toHaveValue('2020-01-02T03:04:05Z');
    await expect(rows).toHaveCount(2);
    await page.getByLabel('To (UTC)').fill('2020-01-03');
    await page.getByLabel('To (UTC)').press('Enter');
    await expect(page.locator('p.empty')).toBeVisible();
    await expect(page.getByLabel('Pick the to date and time (UTC)')).toHaveValue('');
    await page.getByLabel('To (UTC)').fill('');
    await page.getByLabel('To (UTC)').press('Enter');
    await expect(rows).toHaveCount(2);

    // A click on the row, away from its link, opens the log.
    await rows.first().locator('td').nth(4).click();
    await expect(page.getByRole('heading', { level: 1 })).toContainText('Event log');
    await expect(page).toHaveURL(/\/logs\/[0-9a-f-]{36}$/);
  } finally {
    receiver.close();
  }
});

test('Event Logs updates by itself when an event arrives (server-sent events), and the stream needs a session', async ({ page, context, request }) => {
  expect((await request.get('/live/default')).status()).toBe(401);
  const receiver = await startReceiver({ ok: true });
  try {
    await signIn(page);
    await addTrigger(page, 'live-hook', 'live-type', receiver.url, '0');
    await page.getByRole('link', { name: 'Event Logs' }).click();
    await page.getByLabel('Trigger', { exact: true }).fill('live-hook');
    await page.getByLabel('Trigger', { exact: true }).press('Enter');
    await expect(page).toHaveURL(/trigger=live-hook/);
    await expect(page.locator('.live-state')).toHaveText('Live');
    await expect(page.locator('p.empty')).toBeVisible();
    const processed = Number(await page.locator('.count[data-status="processed"]').innerText());

    // Another tab of the same operator fires an event; this page is not touched.
    const other = await context.newPage();
    await other.goto('/p/default/triggers');
    await expect(other.locator('html[data-hydrated="true"]')).toHaveCount(1, { timeout: 20_000 });
    await other.locator('tr[data-trigger="live-hook"]').getByRole('button', { name: 'Trigger' }).click();
    await other.getByRole('dialog', { name: 'Trigger event' }).getByRole('button', { name: 'Trigger', exact: true }).click();
    await expect.poll(() => receiver.received.length).toBe(1);
    await other.keyboard.press('Escape');

    await expect(page.locator('table.logs tbody tr')).toHaveCount(1, { timeout: 10_000 });
    await expect(page.locator('table.logs tbody tr').first()).toContainText('processed', { timeout: 10_000 });
    await expect(page.locator('.count[data-status="processed"]')).toHaveText(String(processed + 1), { timeout: 10_000 });

    // Turned off, the page stays as it is.
    await page.getByLabel('Live updates').uncheck();
    await expect(page.locator('.live-state')).toHaveText('');
    await other.locator('tr[data-trigger="live-hook"]').getByRole('button', { name: 'Trigger' }).click();
    await other.getByRole('dialog', { name: 'Trigger event' }).getByRole('button', { name: 'Trigger', exact: true }).click();
    await expect.poll(() => receiver.received.length).toBe(2);
    await page.waitForTimeout(2500);
    await expect(page.locator('table.logs tbody tr')).toHaveCount(1);
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect(page.locator('table.logs tbody tr')).toHaveCount(2);
  } finally {
    receiver.close();
  }
});
