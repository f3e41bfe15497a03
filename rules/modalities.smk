# Tabular modalities: each gets only the preparation keys of its own section of the config, so
# changing one modality's source or columns reruns that modality's branch alone (and changing
# its block hyper-parameters reruns its blocks, not its preparation).

PREPARE_KEYS = ("id_column", "include", "exclude", "columns", "categorical")



rule prepare_modality:
    input:
        lambda w: MODALITIES[w.tabular]["path"],
    output:
        f"{OUT}/modalities/{{tabular}}.parquet",
    params:
        args=lambda w: cli_args({**{k: MODALITIES[w.tabular].get(k) for k in PREPARE_KEYS}, "outcome_columns": OUTCOMES}),
    log:
        f"{OUT}/logs/prepare_modality/{{tabular}}.log",
    benchmark:
        f"{OUT}/benchmarks/prepare_modality/{{tabular}}.tsv"
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=15,
    shell:
        "lego prepare-modality --table {input:q} --modality {wildcards.tabular} {params.args} "
        "--out {output:q} > {log:q} 2>&1"
