"""Services hold the rules: dialect blueprints parse and render, services decide."""
