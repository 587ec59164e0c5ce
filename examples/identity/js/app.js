// identity in JavaScript: every record out as it came in. Parameter `mode`: `bulk` (the
// default) hands the input back with no per-record work; `each` pushes every value, to measure
// the per-record cost of the helper.

export default class Plugin {
  constructor(params) {
    params.allowOnly(['mode']);
    this.mode = params.get('mode', 'bulk');
    if (this.mode !== 'bulk' && this.mode !== 'each') {
      throw new Error(`parameter mode: ${JSON.stringify(this.mode)}; choose bulk or each`);
    }
  }

  transform(ctx, input, out) {
    if (this.mode === 'bulk') {
      out.passThrough();
      return;
    }
    for (let i = 0; i < input.length; i++) out.push(i, input.value(i));
  }
}
