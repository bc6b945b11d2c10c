"""The built-in tasks' builders, one module per capability.

Every builder takes ``(size, seed)`` and returns a balanced, shuffled `Task` whose ids
are derived from the row's content; `activation_cache.tasks` registers them.
"""
