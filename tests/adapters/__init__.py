"""The trainer adapters against their trainers' rules."""
