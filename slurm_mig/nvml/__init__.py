"""The only code that calls NVML: backend factory, driver, discovery, errors."""
