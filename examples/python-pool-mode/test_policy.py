"""Unit tests of policy.py (no bindings needed): python3 -m unittest, run by ./build."""

import unittest

import policy


class ParseSettings(unittest.TestCase):
    def test_defaults(self):
        self.assertEqual(policy.parse_settings([]), policy.Config())

    def test_session_apps_and_tag(self):
        config = policy.parse_settings([("session_apps", " a, b ,,"), ("version_tag", "blue")])
        self.assertEqual(config.session_apps, {"a", "b"})
        self.assertEqual(policy.version(config.version_tag), "0.1.0-python+blue")
        self.assertEqual(policy.version(""), "0.1.0-python")

    def test_unknown_keys_are_named(self):
        with self.assertRaises(ValueError) as e:
            policy.parse_settings([("mode", "session")])
        self.assertEqual(str(e.exception), "unknown setting 'mode' (known settings: session_apps, version_tag)")
        with self.assertRaises(ValueError) as e:
            policy.parse_settings([("a", "1"), ("b", "2")])
        self.assertIn("unknown settings 'a', 'b'", str(e.exception))

    def test_repeated_keys(self):
        with self.assertRaises(ValueError) as e:
            policy.parse_settings([("session_apps", "a"), ("session_apps", "b")])
        self.assertEqual(str(e.exception), "setting 'session_apps' given more than once")


class Decide(unittest.TestCase):
    def test_transaction_pooling(self):
        self.assertTrue(policy.release(False, False, False))
        self.assertFalse(policy.release(True, False, False))
        self.assertFalse(policy.release(False, True, False))

    def test_session_pooled_sessions_keep_their_server(self):
        self.assertFalse(policy.release(False, False, True))


class Cache(unittest.TestCase):
    def test_oldest_entry_goes_first(self):
        cache = policy.BoundedCache(limit=2)
        cache[1], cache[2] = True, False
        cache[2] = True  # an update does not evict
        self.assertEqual(list(cache), [1, 2])
        cache[3] = False
        self.assertEqual(dict(cache), {2: True, 3: False})


if __name__ == "__main__":
    unittest.main()
