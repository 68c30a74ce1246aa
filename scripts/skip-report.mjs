// A test reporter that ends the run with every skipped suite and test and why. Node's own summary
// counts skipped tests but not skipped suites, so a suite left out for a missing tool (helm,
// promtool, chromium, redis-server) would otherwise pass unseen.
export default async function* skipReport(source) {
  const skipped = [];
  for await (const event of source) {
    const data = event.data;
    if (event.type !== 'test:pass' || data.skip === undefined || data.skip === false) continue;
    const kind = data.details?.type === 'suite' ? 'suite' : 'test';
    skipped.push(`  ${kind}: ${data.name}${typeof data.skip === 'string' ? ` (${data.skip})` : ''}`);
  }
  yield skipped.length === 0 ? 'skipped: none\n' : `skipped: ${skipped.length} (a skipped suite's tests are not in the counts above)\n${skipped.join('\n')}\n`;
}
