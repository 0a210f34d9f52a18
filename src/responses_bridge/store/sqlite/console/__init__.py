"""What the console reads on SQLite: its browser of stored responses (browse.py) and the facts table its orders and
sums read, written behind the saves (response_facts.py)."""
