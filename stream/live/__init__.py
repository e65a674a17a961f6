"""The live worker's parts that keep it exact under faults: health, namespace guard, partition cursors, positions."""
