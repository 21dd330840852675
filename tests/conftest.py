def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end-to-end test: starts the real switch and drives it with SIPp/RTP"
    )
