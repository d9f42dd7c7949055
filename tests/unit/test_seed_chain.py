"""The shipped seed/ declares NMDC's metagenome chain, from sequencing to MAGs, walked as a chain runs."""

from __future__ import annotations

from collections import defaultdict

from jobtriggers.logic.seed import Registry, load_seed_dir
from tests.conftest import SEED_DIR

ROOT_TYPE = "metagenome_sequencing_activity_set"
# Each link as seed/README.md draws it: workflow -> the type its outputs carry -> what that triggers.
CHAIN = {
    "readqc-1.0.6": ("read_qc_analysis_activity_set", {"mgasm-1.0.3", "mgrba-1.0.2"}),
    "mgasm-1.0.3": ("metagenome_assembly_set", {"mgann-1.0.0"}),
    "mgann-1.0.0": ("metagenome_annotation_activity_set", {"mags-1.0.4"}),
    "mgrba-1.0.2": ("read_based_taxonomy_analysis_activity_set", set()),
    "mags-1.0.4": ("mags_activity_set", set()),
}


def _triggered(registry: Registry) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for t in registry.triggers:
        out[t.object_type_id].add(t.workflow_id)
    return out


def test_from_a_sequencing_tag_the_outputs_and_triggers_reach_mags() -> None:
    registry = load_seed_dir(SEED_DIR)
    triggered = _triggered(registry)
    workflows = {w.id: w for w in registry.workflows}
    # Walk as the service runs the chain: a type starts workflows, their outputs' types start more
    paths: dict[str, list[str]] = {}
    todo = [(ROOT_TYPE, [ROOT_TYPE])]
    while todo:
        object_type, path = todo.pop()
        for wf in sorted(triggered[object_type]):
            assert wf not in paths, f"{wf} is reached twice: {paths[wf]} and {path}"
            paths[wf] = [*path, wf]
            for out_type in sorted(workflows[wf].output_object_types()):
                todo.append((out_type, [*path, wf, out_type]))
    # Then every link of the chain is reached, MAGs by way of QC, assembly and annotation
    assert paths["mags-1.0.4"] == [
        ROOT_TYPE,
        "readqc-1.0.6",
        "read_qc_analysis_activity_set",
        "mgasm-1.0.3",
        "metagenome_assembly_set",
        "mgann-1.0.0",
        "metagenome_annotation_activity_set",
        "mags-1.0.4",
    ]
    assert paths["mgrba-1.0.2"][-3:] == ["readqc-1.0.6", "read_qc_analysis_activity_set", "mgrba-1.0.2"]
    # and besides the chain, only upstream's all-in-one metag-1.0.0, which outputs nothing
    assert set(paths) == set(CHAIN) | {"metag-1.0.0"}
    assert workflows["metag-1.0.0"].outputs == []


def test_each_link_gives_its_type_to_one_output_and_the_ends_trigger_nothing() -> None:
    registry = load_seed_dir(SEED_DIR)
    triggered = _triggered(registry)
    workflows = {w.id: w for w in registry.workflows}
    for wf_id, (chain_type, next_workflows) in CHAIN.items():
        wf = workflows[wf_id]
        # one record output carries the chain type (two would start two next jobs per run) ...
        carriers = [o.name for o in wf.outputs if chain_type in o.object_types]
        assert carriers == ["workflow_execution"], wf_id
        # ... every other output is a data object, which triggers nothing
        assert wf.output_object_types() == {chain_type, "data_object_set"}, wf_id
        assert triggered[chain_type] == next_workflows, wf_id
    assert not triggered["data_object_set"]
    # mgrba-1.0.2 and mags-1.0.4 end their branches: none of their output types starts a job
    for end in ("mgrba-1.0.2", "mags-1.0.4"):
        assert all(not triggered[t] for t in workflows[end].output_object_types()), end


def test_the_chain_outputs_are_nmdcs_files_by_their_wdl_names() -> None:
    workflows = {w.id: w for w in load_seed_dir(SEED_DIR).workflows}
    # a few files each next step needs, as NMDC's automation names them
    assert {"filtered_final", "filtered_stats_final", "rqc_info"} <= set(
        workflows["readqc-1.0.6"].output_names()
    )
    assert {"sr_contig", "sr_bam"} <= set(workflows["mgasm-1.0.3"].output_names())
    assert {"functional_gff", "proteins_faa", "ko_tsv", "crt_crisprs"} <= set(
        workflows["mgann-1.0.0"].output_names()
    )
    assert {"final_hqmq_bins_zip", "final_checkm"} <= set(workflows["mags-1.0.4"].output_names())
    counts = {wf: len(workflows[wf].outputs) for wf in CHAIN}
    assert counts == {
        "readqc-1.0.6": 4,
        "mgasm-1.0.3": 8,
        "mgann-1.0.0": 26,
        "mgrba-1.0.2": 11,
        "mags-1.0.4": 9,
    }
