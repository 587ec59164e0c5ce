// json-upper in JavaScript: keeps the string fields `user` (ASCII upper-cased) and `item` of
// each JSON object, and rejects every other value with one of four reasons (see ../SPEC.md).
//
// JSON.parse is exactly RFC 8259 (no NaN, comments, trailing commas...), keeps a repeated
// field's last value, and JSON.stringify escapes as SPEC.md says. The strict decoder rejects
// invalid UTF-8, and keeps a byte order mark (which JSON.parse then refuses).

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lower = /[a-z]+/g;
const ascii = /^[\x00-\x7f]*$/;

export default class Plugin {
  constructor(params) {
    params.allowOnly([]);
  }

  transform(ctx, input, out) {
    for (let i = 0; i < input.length; i++) {
      const kept = upper(input.value(i));
      if (kept.ok) out.push(i, kept.value);
      else out.reject(i, kept.reason);
    }
  }
}

/// `{ ok: true, value }` with the output text for one value's bytes, or `{ ok: false, reason }`.
export function upper(bytes) {
  let value;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch {
    return { ok: false, reason: 'not valid JSON' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, reason: 'not a JSON object' };
  }
  const { user, item } = value;
  if (typeof user !== 'string') return { ok: false, reason: 'field "user" is missing or not a string' };
  if (typeof item !== 'string') return { ok: false, reason: 'field "item" is missing or not a string' };
  // toUpperCase is Unicode's (é becomes É): on ASCII text it is the ASCII upper-casing SPEC.md
  // asks for, and much faster than a replace calling back per run of letters.
  const shouted = ascii.test(user) ? user.toUpperCase() : user.replace(lower, (s) => s.toUpperCase());
  return { ok: true, value: `{"user":${JSON.stringify(shouted)},"item":${JSON.stringify(item)}}` };
}
