# meetq's pytest plugin (meetq/testing/pytest_plugin.py) is loaded through its `pytest11`
# entry point, as in a user's project, so it is not listed here. pytester
# runs a small pytest project inside a test (tests/unit/test_testing_kit.py).
pytest_plugins = ["pytester"]
