import { test, expect, Page, Locator } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { addTrigger, hydrated, signIn, startReceiver, PASSWORD } from './helpers';

/** Runs axe-core on the page and records any serious or critical violation. */
async function scan(page: Page, what: string, found: string[]) {
  const results = await new AxeBuilder({ page }).analyze();
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const lesser = results.violations.filter((v) => !bad.includes(v)).map((v) => `${v.id} (${v.impact})`);
  console.log(`${what}: ${results.passes.length} rules pass, ${bad.length} serious or critical${lesser.length ? `; lesser: ${lesser.join(', ')}` : ''}`);
  found.push(...bad.map((v) => `${what}: ${v.id} (${v.impact}): ${v.help}\n  ${v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`).join('\n  ')}`));
}

/** Presses Tab (or Shift+Tab) until `target` has focus; fails if it never does. */
async function tabTo(page: Page, target: Locator, backwards = false) {
  for (let i = 0; i < 60; i++) {
    if (await target.evaluate((el) => el === document.activeElement).catch(() => false)) return;
    await page.keyboard.press(backwards ? 'Shift+Tab' : 'Tab');
  }
  throw new Error(`keyboard focus never reached ${target}`);
}

async function focusedIsInside(page: Page, container: Locator) {
  return container.evaluate((el) => el.contains(document.activeElement));
}

test('every page passes an accessibility scan with no serious or critical violations', async ({ page }) => {
  const receiver = await startReceiver({ ok: true }, 1);
  const found: string[] = [];
  try {
    await page.goto('/login');
    await hydrated(page);
    await scan(page, 'sign-in', found);

    await signIn(page);
    await addTrigger(page, 'a11y-hook', 'a11y-type', receiver.url, '0');
    await scan(page, 'triggers', found);

    await page.getByRole('button', { name: 'Add', exact: true }).click();
    const form = page.getByRole('dialog', { name: 'Add event trigger' });
    await expect(form).toBeVisible();
    await form.getByText('Advanced settings').click();
    await scan(page, 'the Add form', found);
    await page.keyboard.press('Escape');
    await expect(form).toHaveCount(0);

    await page.locator('tr[data-trigger="a11y-hook"]').getByRole('button', { name: 'Trigger' }).click();
    const modal = page.getByRole('dialog', { name: 'Trigger event' });
    await modal.getByRole('button', { name: 'Trigger' }).click();
    await expect(modal.getByRole('link', { name: 'See its event logs' })).toBeVisible();
    await scan(page, 'the Trigger modal', found);
    await modal.getByRole('button', { name: 'Close' }).click();

    await page.getByRole('link', { name: 'Event Logs' }).click();
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Logs');
    await expect(page.locator('table.logs tbody tr').first()).toBeVisible();
    await scan(page, 'logs', found);

    await page.locator('table.logs tbody tr').first().getByRole('link').click();
    await expect(page.getByRole('heading', { level: 1 })).toContainText('Event log');
    await scan(page, 'log detail', found);

    await page.getByRole('link', { name: 'Dead Letters' }).click();
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Dead letters');
    await scan(page, 'dead letters', found);

    await page.getByRole('link', { name: 'Settings' }).click();
    await expect(page.getByRole('heading', { level: 1 })).toContainText(/settings/i);
    await scan(page, 'settings', found);

    await page.goto('/p/default/account');
    await hydrated(page);
    await expect(page.getByRole('heading', { level: 1 })).toBeVisible();
    await scan(page, 'account', found);
    expect(found, 'serious or critical accessibility violations').toEqual([]);
  } finally {
    receiver.close();
  }
});

test('keyboard only: add a trigger, fire a synchronous event, close with Escape, open the event log', async ({ page }) => {
  const receiver = await startReceiver({ answer: 42 });
  try {
    await page.goto('/login');
    await hydrated(page);
    await tabTo(page, page.getByLabel('User name'));
    await page.keyboard.type('admin');
    await tabTo(page, page.getByLabel('Password'));
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await expect(page).toHaveURL(/\/p\/default\/triggers/, { timeout: 20_000 });
    await hydrated(page);

    // Add: the dialog takes focus, keeps it, and gives it back on close.
    const add = page.getByRole('button', { name: 'Add', exact: true }).first();
    await tabTo(page, add);
    await page.keyboard.press('Enter');
    const form = page.getByRole('dialog', { name: 'Add event trigger' });
    await expect(form).toBeVisible();
    await expect(form.getByLabel('Trigger Name')).toBeFocused();
    await page.keyboard.type('keyboard-hook');
    for (let i = 0; i < 25; i++) {
      await page.keyboard.press('Tab');
      expect(await focusedIsInside(page, form), `Tab ${i + 1} left the dialog`).toBe(true);
    }
    await tabTo(page, form.getByLabel('Type'));
    await page.keyboard.type('keyboard-type');
    await tabTo(page, form.getByLabel('Webhook URL'));
    await page.keyboard.type(receiver.url);
    await tabTo(page, form.getByRole('button', { name: 'Save' }));
    await page.keyboard.press('Enter');
    await expect(form).toHaveCount(0);
    const row = page.locator('tr[data-trigger="keyboard-hook"]');
    await expect(row).toBeVisible();

    // The Trigger modal, synchronously, then Escape.
    const fire = row.getByRole('button', { name: 'Trigger' });
    await tabTo(page, fire);
    await page.keyboard.press('Enter');
    const modal = page.getByRole('dialog', { name: 'Trigger event' });
    await expect(modal).toBeVisible();
    expect(await focusedIsInside(page, modal)).toBe(true);
    await tabTo(page, modal.getByLabel('Trigger event synchronously'));
    await page.keyboard.press('Space');
    await expect(modal.getByLabel('Trigger event synchronously')).toBeChecked();
    await tabTo(page, modal.getByRole('button', { name: 'Trigger', exact: true }));
    await page.keyboard.press('Enter');
    await expect(modal.locator('pre.result')).toContainText('42');
    await expect(modal.getByText('processed')).toBeVisible();
    await page.keyboard.press('Escape');
    await expect(modal).toHaveCount(0);
    await expect(fire).toBeFocused();

    // The event log, from the navigation.
    await tabTo(page, page.getByRole('link', { name: 'Event Logs' }), true);
    await page.keyboard.press('Enter');
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Logs');
    const logRow = page.locator('table.logs tbody tr', { hasText: 'keyboard-hook' }).first();
    await expect(logRow).toBeVisible();
    await tabTo(page, logRow.getByRole('link').first());
    await page.keyboard.press('Enter');
    await expect(page.getByRole('heading', { level: 1 })).toContainText('Event log');
    await expect(page.locator('.facts')).toContainText('keyboard-hook');
    expect(receiver.received.length).toBe(1);
  } finally {
    receiver.close();
  }
});
