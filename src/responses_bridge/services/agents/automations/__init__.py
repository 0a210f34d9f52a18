"""Automations: an agent session started by a clock or a call, bounded per tenant."""
