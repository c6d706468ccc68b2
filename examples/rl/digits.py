"""A project-file reward: the share of the reference answer's digits the reply gets right, in
place (partial credit beside exact_match). Use it with

    plugins = ["digits.py"]            # in the config, relative to it
    [rl.rewards]
    exact_match = 1.0
    digits = 0.2
"""

import tinkerplug


def digits(completion, record, config):
    reference = record["messages"][-1]["content"].strip()
    reply = completion.strip()
    hits = sum(a == b for a, b in zip(reply, reference))
    return hits / max(len(reply), len(reference), 1)


@tinkerplug.hookimpl
def register_rewards(register):
    register("digits", digits)
