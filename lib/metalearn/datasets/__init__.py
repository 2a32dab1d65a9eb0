"""The data sets: fetched from their official URLs or a mirror, verified, prepared and loaded. Imports only core."""
