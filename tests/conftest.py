pytest_plugins = ["meetq.testing.pytest_plugin"]
