#!/usr/bin/env python3
"""The 10,000 records `json-upper` is checked on: one JSON value a line, about one in eight
malformed in one of the ways SPEC.md lists. Deterministic: the same file every run.

    python3 corpus.py [N] > corpus.jsonl
"""
import random
import sys

USERS = ["alice", "bob", "carol", "dave", "Émile", "zoë", "li-wei", "o'brien", "ann marie",
         "mX9_z", "日本語のユーザー", "smile😀", "back\\\\slash", "quo\\\"te", "tab\\there",
         "ctl\\u0001x", "esc\\/aped", "\\u00e9t\\u00e9", "pair\\ud83d\\ude00", ""]
ITEMS = ["book", "pen", "Lamp", "café au lait", "naïve", "x" * 40, "new\\nline", "€5",
         "\\u0000nul", "a/b", "DEL\x7f", "ünïcödé", "", "  spaced  "]

GOOD_SHAPES = [
    '{{"user":"{u}","item":"{i}"}}',
    '{{"item":"{i}","user":"{u}","amount":{n}}}',
    '  {{ "user" : "{u}" , "item" : "{i}" , "tags":["a",{{"b":[1,2,{{"c":null}}]}}], "ok":true }}  ',
    '{{"user":"ignored","item":"{i}","user":"{u}"}}',
    '{{"meta":{{"user":1}},"user":"{u}","price":-12.5e-3,"item":"{i}","n":null}}',
    '\t{{"user":"{u}",\r"item":"{i}","f":false,"big":12345678901234}}\t',
]

BAD = [
    ('{{"user":"{u}","item":"{i}"', "truncated"),
    ('{{"user":"{u}","item":"{i}"}} trailing', "trailing text"),
    ('{{"user":"{u}","item":"{i}",}}', "trailing comma"),
    ("{{'user':'{u}','item':'{i}'}}", "single quotes"),
    ('{{"user":"{u}","item":"{i}","n":NaN}}', "NaN"),
    ('{{"user":"{u}","item":"{i}","n":Infinity}}', "Infinity"),
    ('{{"user":"{u}","item":"{i}","n":01}}', "leading zero"),
    ('{{"user":"{u}","item":"{i}"}} // note', "comment"),
    ('\ufeff{{"user":"{u}","item":"{i}"}}', "byte order mark"),
    ('{{"user":"a\x01b","item":"{i}"}}', "raw control character"),
    ('{{"user":"\\q","item":"{i}"}}', "unknown escape"),
    ('{{"user":"{u}","item":"{i}"}}{{}}', "two values"),
    ('[{{"user":"{u}","item":"{i}"}}]', "array"),
    ('"{u}"', "string"),
    ("42", "number"),
    ("null", "null"),
    ("true", "true"),
    ('{{"item":"{i}"}}', "no user"),
    ('{{"user":7,"item":"{i}"}}', "user a number"),
    ('{{"user":null,"item":"{i}"}}', "user null"),
    ('{{"user":["{u}"],"item":"{i}"}}', "user an array"),
    ('{{"user":"{u}"}}', "no item"),
    ('{{"user":"{u}","item":{{"name":"{i}"}}}}', "item an object"),
    ('{{"user":"{u}","item":false}}', "item false"),
    ("{{}}", "empty object"),
    ("   ", "only spaces"),
]

INVALID_UTF8 = [b'{"user":"\xff\xfe","item":"x"}', b'{"user":"ok","item":"\xc3"}',
                b'{"user":"\xed\xa0\x80","item":"x"}']


def records(n):
    rng = random.Random(20261205)
    for k in range(n):
        u, i = rng.choice(USERS), rng.choice(ITEMS)
        roll = rng.random()
        if roll < 0.01:
            yield rng.choice(INVALID_UTF8)
        elif roll < 0.125:
            shape, _ = rng.choice(BAD)
            yield shape.format(u=u, i=i).encode()
        else:
            shape = rng.choice(GOOD_SHAPES)
            yield shape.format(u=u, i=i, n=rng.randint(-1000, 10**6)).encode()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    out = sys.stdout.buffer
    for record in records(n):
        out.write(record + b"\n")


if __name__ == "__main__":
    main()
