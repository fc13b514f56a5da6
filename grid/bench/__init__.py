"""The grid's benchmarks and soaks (`gatelab bench grid|report|chaos`): measurements of the engine, kept apart
from it. The engine (grid/dispatch/) never imports them."""
