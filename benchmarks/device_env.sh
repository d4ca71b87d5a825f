# Sourced by the device scripts: the settings every GPU run uses.
# NVLink multicast stays off on the shared machines.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
# Open MPI's own UCX components would load the system's older UCX into every
# process under the same soname as ringreduce's (the wheel's): keep them out.
export OMPI_MCA_pml=^ucx OMPI_MCA_osc=^ucx
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
