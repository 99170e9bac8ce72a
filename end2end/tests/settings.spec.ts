import { test, expect } from '@playwright/test';
import { hydrated, signIn, PASSWORD } from './helpers';

test('creating a project from the switcher, then an API key that works once shown and stops when revoked', async ({ page, request }) => {
  await signIn(page);
  const project = `e2e-${Date.now()}`;
  await page.getByLabel('Project', { exact: true }).selectOption('__new');
  const dialog = page.getByRole('dialog', { name: 'New project' });
  await expect(dialog.getByLabel('Project id')).toBeFocused();
  await dialog.getByLabel('Project id').fill('Bad Id');
  await dialog.getByRole('button', { name: 'Create project' }).click();
  await expect(dialog.getByRole('alert')).toContainText("project id 'Bad Id' is invalid");
  await dialog.getByLabel('Project id').fill(project);
  await dialog.getByRole('button', { name: 'Create project' }).click();
  await expect(page).toHaveURL(new RegExp(`/p/${project}/settings$`));
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Project settings');
  await expect(page.getByLabel('curl command')).toContainText(`/v1/api/${project}/eventing/queue`);
  // A new project meets the empty state, which says what a trigger is.
  await page.getByRole('link', { name: 'Event Triggers' }).click();
  await expect(page.getByText('An event trigger delivers every event')).toBeVisible();
  await page.getByRole('link', { name: 'Settings' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Project settings');

  // A key without a name is refused with the reason.
  const form = page.getByRole('form', { name: 'New API key' });
  await form.getByRole('button', { name: 'Create key' }).click();
  await expect(page.getByRole('alert')).toContainText('give the key a name');
  await form.getByLabel('Key name').fill('billing');
  await form.getByRole('button', { name: 'Create key' }).click();
  const key = (await page.locator('code.new-key').textContent())!.trim();
  expect(key).toMatch(/^hrld_[A-Za-z0-9]{40}$/);
  await expect(page.locator('tr[data-key="billing"]')).toContainText('queue');
  await page.screenshot({ path: 'test-results/screenshots/settings.png', fullPage: true });
  await page.getByRole('button', { name: 'Done' }).click();
  await expect(page.locator('code.new-key')).toHaveCount(0);

  const queue = () =>
    request.post(`/v1/api/${project}/eventing/queue`, {
      headers: { Authorization: `Bearer ${key}` },
      data: { type: 'e2e.settings', data: { n: 1 } },
    });
  expect((await queue()).status()).toBe(200);

  const row = page.locator('tr[data-key="billing"]');
  await row.getByRole('button', { name: 'Revoke' }).click();
  await row.getByRole('button', { name: 'Confirm revoke' }).click();
  await expect(row).toContainText('revoked');
  expect((await queue()).status()).toBe(401);

  // The switcher takes us back to default, on the same section.
  await page.getByLabel('Project', { exact: true }).selectOption('default');
  await expect(page).toHaveURL(/\/p\/default\/settings$/);
});

test('secrets are revealed on request and rotated only after confirmation', async ({ page }) => {
  await signIn(page);
  await page.goto('/p/default/settings');
  await hydrated(page);
  const signing = page.locator('[data-secret="signing"]');
  await expect(signing.locator('code')).toHaveText('••••••••••••••••');
  await page.getByRole('button', { name: 'Reveal secrets' }).click();
  await expect(signing.locator('code')).toHaveText(/^whsec_/);
  const before = await signing.locator('code').textContent();

  await signing.getByRole('button', { name: 'Rotate signing secret' }).click();
  await signing.getByRole('button', { name: 'Cancel' }).click();
  await expect(signing.locator('code')).toHaveText(before!);

  await signing.getByRole('button', { name: 'Rotate signing secret' }).click();
  await expect(signing.getByRole('alertdialog')).toContainText('Receivers that verify webhook-signature need the new secret');
  await signing.getByRole('button', { name: 'Rotate now' }).click();
  await expect(page.getByRole('status')).toContainText('Rotated');
  await expect(signing.locator('code')).toHaveText(/^whsec_/);
  await expect(signing.locator('code')).not.toHaveText(before!);
});

test('changing the password: wrong current password, mismatch, then success and sign-in with the new one', async ({ page, browser, baseURL }) => {
  // Another session of the same user, which the change must sign out.
  const otherContext = await browser.newContext({ baseURL });
  const other = await otherContext.newPage();
  await signIn(other);
  await signIn(page);
  await page.getByRole('link', { name: 'admin' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Account');
  const form = page.getByRole('form', { name: 'Change password' });
  const change = async (current: string, next: string, repeat = next) => {
    // By name: an error shown inside a label becomes part of its accessible name.
    await form.locator('input[name="current"]').fill(current);
    await form.locator('input[name="new"]').fill(next);
    await form.locator('input[name="repeat"]').fill(repeat);
    await form.getByRole('button', { name: 'Change password' }).click();
  };
  await change('not-it', 'another-password');
  await expect(form.getByRole('alert')).toHaveText('the current password is wrong');
  // Guesses at the current password go through the sign-in throttle: sent at
  // once from a signed-in session, all but one are refused unchecked.
  const guesses = await Promise.all(['guess-1', 'guess-2', 'guess-3', 'guess-4', 'guess-5'].map((current) =>
    page.request.post('/api/change_password', {
      form: { current, new: 'another-password', repeat: 'another-password' },
      headers: { origin: new URL(baseURL!).origin },
    }).then((r) => r.text())));
  expect(guesses.filter((g) => g.includes('too many wrong passwords')).length, guesses.join('\n')).toBeGreaterThanOrEqual(4);
  await change(PASSWORD, 'another-password', 'another-passw0rd');
  await expect(form.getByRole('alert')).toHaveText(/the two new passwords differ/);
  await change(PASSWORD, 'short');
  await expect(form.getByRole('alert')).toHaveText(/at least 8 characters/);
  await change(PASSWORD, 'another-password');
  await expect(form.getByRole('status')).toHaveText('Password changed.');
  // From here on a failure must not leave the other tests with a wrong password.
  try {
    await page.screenshot({ path: 'test-results/screenshots/account.png' });
    await other.goto('/p/default/triggers');
    await expect(other).toHaveURL(/\/login$/);
    await otherContext.close();
    // This session stays signed in.
    await page.goto('/p/default/logs');
    await hydrated(page);
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Event Logs');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect(page).toHaveURL(/\/login$/);
    await hydrated(page);
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill('another-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page).toHaveURL(/\/p\/default\/triggers/, { timeout: 20_000 });
    await hydrated(page);
  } finally {
    // Put the shared password back for the other tests.
    await page.goto('/p/default/account');
    await hydrated(page);
    if (page.url().endsWith('/login')) {
      await page.getByLabel('User name').fill('admin');
      await page.getByLabel('Password').fill('another-password');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect(page).toHaveURL(/\/p\/default\/triggers/, { timeout: 20_000 });
      await page.goto('/p/default/account');
      await hydrated(page);
    }
    await change('another-password', PASSWORD);
    await expect(form.getByRole('status')).toHaveText('Password changed.');
  }
});

test('Mission Control is usable at 800 px wide', async ({ page }) => {
  await page.setViewportSize({ width: 800, height: 900 });
  await signIn(page);
  for (const section of ['triggers', 'logs', 'settings']) {
    await page.goto(`/p/default/${section}`);
    await hydrated(page);
    // Nothing wider than the window: no sideways scrolling of the page.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow, `${section} scrolls sideways by ${overflow}px`).toBeLessThanOrEqual(0);
    await page.screenshot({ path: `test-results/screenshots/${section}-800px.png`, fullPage: true });
  }
});
