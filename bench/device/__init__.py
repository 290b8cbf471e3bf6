"""The measuring core: what runs on the measured device.

It takes a plan (plain JSON, made by the controller or read from a plans file), resolves it
against what this device has, measures it and returns a measurement (plain JSON). It runs on
Python >= 3.6 with torch >= 1.10 (a Jetson Nano's JetPack 4.6) and imports no Hydra, OmegaConf
or MLflow; the controller and analysis never import the modules that need torch.

    python3 -m bench.device serve                     # a worker speaking protocol.py on stdin/stdout
    python3 -m bench.device plans.jsonl --out results/   # offline: measure a plans file
    python3 -m bench.device facts                     # what this device is and has, as JSON
"""
