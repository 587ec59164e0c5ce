"""json-upper's logic, run natively: python3 -m unittest"""

import unittest

import sluice
from plugin import Plugin, convert


class JsonUpperTest(unittest.TestCase):
    def test_objects_keep_user_upper_cased_and_item(self):
        self.assertEqual(
            convert('{"item":"b\\u00e9\\n","x":1,"user":"al\u00efce"}'.encode()),
            '{"user":"AL\u00efCE","item":"b\u00e9\\n"}'.encode(),
        )

    def test_rejects_say_why_in_the_spec_order(self):
        cases = {
            b"NaN": "not valid JSON",
            b"{\"user\":\"a\",\"item\":\"b\",}": "not valid JSON",
            b"\xef\xbb\xbf{}": "not valid JSON",
            b"\xff": "not valid JSON",
            b"01": "not valid JSON",
            b"[1]": "not a JSON object",
            b'{"item":"b"}': 'field "user" is missing or not a string',
            b'{"user":"a","item":2}': 'field "item" is missing or not a string',
        }
        for value, reason in cases.items():
            with self.subTest(value=value), self.assertRaises(ValueError) as e:
                convert(value)
            self.assertEqual(str(e.exception), reason)

    def test_a_batch_gives_outputs_and_rejects(self):
        batch = sluice.Batch.from_values(['{"user":"a","item":"b"}', "x"])
        out = sluice.Output(batch)
        Plugin(sluice.Params()).transform(sluice.Context(), batch, out)
        self.assertEqual(out.values(), [b'{"user":"A","item":"b"}'])
        self.assertEqual(out.rejected, [(1, "not valid JSON")])


if __name__ == "__main__":
    unittest.main()
