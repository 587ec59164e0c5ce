import { test } from 'node:test';
import assert from 'node:assert/strict';
import vm from 'node:vm';
import { Batch, Context, Output, Params } from './sluice.js';
import Plugin from './app.js';

for (const mode of ['bulk', 'each']) {
  test(`mode ${mode} gives every record back`, () => {
    const input = Batch.from(['a', '', 'ccc']);
    const out = new Output(input);
    new Plugin(new Params({ mode })).transform(Context.test(), input, out);
    assert.deepEqual(out.texts(), ['a', '', 'ccc']);
    assert.deepEqual(out.toWit().rejected, []);
  });
}

test('an unknown mode is refused', () => {
  assert.throws(() => new Plugin(new Params({ mode: 'some' })), /mode/);
});

test('values made in another realm (as the component bindings make them) are pushed too', () => {
  const foreign = vm.runInNewContext('new Uint8Array([104, 105])');
  const input = Batch.from([foreign]);
  const out = new Output(input);
  new Plugin(new Params({ mode: 'each' })).transform(Context.test(), input, out);
  assert.deepEqual(out.texts(), ['hi']);
});
