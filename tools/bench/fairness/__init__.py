"""``scripts/bench fairness`` (``__main__.py``): what a hostile caller's idle bodies cost another caller and the
probes, and its other cases: many greedy tenants (``many.py``), a victim's every call beside more greedy tenants
than a pool's units (``turns.py``), the work greedy tenants get done and the rule's bookkeeping CPU
(``goodput.py``).
"""
