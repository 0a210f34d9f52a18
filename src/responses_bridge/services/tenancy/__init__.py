"""Who is calling and what each tenant may hold: identity, limits, the memory budget and its watch, body pace.

Beneath every other capability.
"""
