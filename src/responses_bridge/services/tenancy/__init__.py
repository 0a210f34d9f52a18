"""Who is calling and what each tenant may hold: identity, limits, the memory budget and its watch, body pace, and
a body's admission (its bytes pulled, its memory asked of the budget).

Beneath every other capability.
"""
