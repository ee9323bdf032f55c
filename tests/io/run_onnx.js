// Runs an exported ONNX model with ONNX Runtime (the npm package onnxruntime-node, CPU) on a raw float32 batch
// and writes the logits, once with graph optimisations disabled and once with all of them.
//   node run_onnx.js ORT_MODULE_DIR MODEL.onnx INPUT.f32 B C H W OUT_PREFIX
// writes OUT_PREFIX.disabled.f32 and OUT_PREFIX.all.f32 (float32, [B, classes] row-major).
const fs = require('fs');
const [moduleDir, modelPath, inputPath, b, c, h, w, outPrefix] = process.argv.slice(2);
const ort = require(moduleDir);

async function run(level) {
  const session = await ort.InferenceSession.create(modelPath, {
    graphOptimizationLevel: level, intraOpNumThreads: 2, interOpNumThreads: 1, executionProviders: ['cpu']});
  const buf = fs.readFileSync(inputPath);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const input = new ort.Tensor('float32', data, [Number(b), Number(c), Number(h), Number(w)]);
  const out = await session.run({pixel_values: input});
  const logits = out.logits;
  fs.writeFileSync(`${outPrefix}.${level}.f32`, Buffer.from(logits.data.buffer, logits.data.byteOffset,
                                                             logits.data.byteLength));
  console.log(`${level}: logits [${logits.dims.join(', ')}]`);
}

(async () => {
  await run('disabled');
  await run('all');
})().catch((e) => {
  console.error(`run_onnx.js: ${e.message || e}`);
  process.exit(1);
});
