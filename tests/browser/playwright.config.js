// playwright.config.js: the browser tests of the dashboard, run by tests/run.
// They drive Debian's Chromium (Playwright cannot download browsers here),
// one worker at a time since each worker runs its own server and database
// on a two-core machine. A failure keeps a screenshot and the servers' logs
// under test-results/ (git-ignored).

import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: './specs',
  outputDir: './test-results',
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 20_000 },
  reporter: [['list'], ['./helpers/summary-reporter.js']],
  use: {
    browserName: 'chromium',
    headless: true,
    screenshot: 'only-on-failure',
    actionTimeout: 15_000,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        // A host name that is not localhost, for a page outside any secure
        // context (approval-binding.spec.js); no other name is mapped.
        '--host-resolver-rules=MAP dashboard.test 127.0.0.1',
      ],
    },
  },
});
