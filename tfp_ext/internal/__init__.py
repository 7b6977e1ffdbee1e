"""Shared math for tfp-ext. Not a public API: names here may change without notice."""
