"""Ray Job entrypoint: two actors (one CPU each) on the test head compute in parallel.
Prints one line `RESULT {"values": [...], "pids": [...], "nodes": [...]}` for the test to read."""
import json
import os

import ray


@ray.remote(num_cpus=1)
class Squarer:
    def square(self, x: int) -> tuple[int, int, str]:
        return x * x, os.getpid(), ray.get_runtime_context().get_node_id()


def main() -> None:
    ray.init()  # RAY_ADDRESS is set by the job supervisor
    actors = [Squarer.remote() for _ in range(2)]
    out = ray.get([a.square.remote(i + 2) for i, a in enumerate(actors)])
    print("RESULT " + json.dumps({"values": [o[0] for o in out], "pids": [o[1] for o in out],
                                  "nodes": [o[2] for o in out]}), flush=True)


if __name__ == "__main__":
    main()
