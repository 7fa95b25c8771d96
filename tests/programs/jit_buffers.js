// Retains 40 ArrayBuffers of 4 MiB, made by makeBuffers, when a line arrives on stdin: the
// tracer attaches in between. Run with --perf-basic-prof (the perf map names makeBuffers)
// and --always-sparkplug (makeBuffers is compiled code from its first call, not bytecode the
// interpreter runs).
const kept = [];
function makeBuffers(count) {
  for (let i = 0; i < count; i++) {
    const buffer = new ArrayBuffer(4 << 20);
    new Uint8Array(buffer)[0] = i;
    kept.push(buffer);
  }
}
makeBuffers(0);
process.stdout.write('ready\n');
process.stdin.once('data', () => {
  makeBuffers(40);
  process.stdout.write(`kept ${kept.length}\n`);
  process.exit(0);
});
