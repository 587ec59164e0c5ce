import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batch, Context, Output, Params } from './sluice.js';
import Plugin from './app.js';

function run(values) {
  const input = Batch.from(values);
  const out = new Output(input);
  new Plugin(new Params()).transform(Context.test(), input, out);
  return { values: out.texts(), rejected: out.rejected };
}

test('objects keep user (upper-cased, ASCII only) and item', () => {
  const { values } = run(['{"item":"b\\n","x":1,"user":"ané\\u0001"}', ' {"user":"a","user":"z","item":"/"} ']);
  assert.deepEqual(values, ['{"user":"ANé\\u0001","item":"b\\n"}', '{"user":"Z","item":"/"}']);
});

test('the rest is rejected with the reasons of SPEC.md, in order', () => {
  const bad = new Uint8Array([0x7b, 0xff, 0x7d]);
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]);
  const { values, rejected } = run([bad, bom, 'NaN', '[1]', '{"user":1}', '{"user":"u"}', '{"a":1,}']);
  assert.deepEqual(values, []);
  assert.deepEqual(rejected.map((r) => r.reason), [
    'not valid JSON',
    'not valid JSON',
    'not valid JSON',
    'not a JSON object',
    'field "user" is missing or not a string',
    'field "item" is missing or not a string',
    'not valid JSON',
  ]);
});
