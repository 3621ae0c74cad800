// helpers/summary-reporter.js: prints one plain closing line after the list
// reporter's, "browser: N passed, N failed" (", N skipped" when any), so a
// log reader that knows no Playwright still sees what ran.

export default class SummaryReporter {
  onBegin(config, suite) {
    this.suite = suite;
  }

  onEnd() {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const test of this.suite.allTests()) {
      const outcome = test.outcome();
      if (outcome === 'expected' || outcome === 'flaky') passed += 1;
      else if (outcome === 'skipped') skipped += 1;
      else failed += 1;
    }
    console.log(`browser: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  }

  printsToStdio() {
    return true;
  }
}
