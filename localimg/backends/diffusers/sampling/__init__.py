"""The scheduler of each call: diffusers' scheduler names, flow-matching shifts, and the choice
of request > YAML > the model's own."""
