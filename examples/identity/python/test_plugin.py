"""identity's logic, run natively: python3 -m unittest"""

import unittest

import sluice
from plugin import Plugin


class IdentityTest(unittest.TestCase):
    def test_both_modes_return_every_value_unchanged(self):
        batch = sluice.Batch.from_values(["a", "", "c"])
        for mode in ("bulk", "each"):
            with self.subTest(mode=mode):
                out = sluice.Output(batch)
                Plugin(sluice.Params(mode=mode)).transform(sluice.Context(), batch, out)
                self.assertEqual(out.values(), [b"a", b"", b"c"])

    def test_an_unknown_mode_is_refused(self):
        with self.assertRaises(ValueError):
            Plugin(sluice.Params(mode="some"))


if __name__ == "__main__":
    unittest.main()
