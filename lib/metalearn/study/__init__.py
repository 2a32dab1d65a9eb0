"""The chapters' glue, the only floor above the methods: nothing below imports it."""
