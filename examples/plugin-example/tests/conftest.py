# tinkerplug's test harness (the `tinkerplug_runner` fixture). Installing tinkerplug registers it
# with pytest already (a pytest11 entry point); naming it here keeps the tests working without that.
pytest_plugins = ["tinkerplug.testing"]
