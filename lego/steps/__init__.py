"""The model steps of the workflow, one module each: train a block, merge, fuse, choose the
reported variant, train a baseline, evaluate and predict.

Each function reads plain files (parquet tables, model folders) and writes plain files, so the
rules stay thin and every step can be run by hand through the ``lego`` command.
"""
