"""Test helpers, imported as tests.support.*; no test module imports another."""
