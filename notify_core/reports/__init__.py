"""Pictures for people: plots as self-contained HTML (matplotlib, embedded as base64 images).

``plots`` renders figures without a display or pyplot's global state (thread-safe, no GUI backend);
``evaluation`` adds charts to the offline evaluation report; ``operations`` computes the daily operations
report from the Store and renders it.
"""
