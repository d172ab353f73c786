/* codegen/vec_proof.h — the proof that a loop may run as vector code, shared
 * by the C backend's vector loops (codegen/emit_vec.c) and the LLVM
 * backend's outer-loop vectoriser (codegen/emit_llvm_vec.c). See
 * codegen/vec_proof.c for what it expects and guarantees. Not a public
 * interface. */
#ifndef KILN_CODEGEN_VEC_PROOF_H
#define KILN_CODEGEN_VEC_PROOF_H

#include "codegen/emit_c_internal.h" /* bufinfo, kiln_ce_operands */

#include <stdbool.h>
#include <stdint.h>

typedef struct kiln_vp_ref {
    int32_t buf, index;
    bool store;
} kiln_vp_ref;

typedef struct kiln_vproof {
    /* set by the emitter before kiln_vp_init */
    const kiln_kernel *k;
    const bufinfo *bi; /* per buffer of k (kiln_ce_classify_bufs) */
    int32_t s;         /* the loop: a KS_LOOP statement of k */
    int32_t var;       /* its variable */
    /* what the emitter can write */
    bool f64;          /* f64 values, locals and stores besides f32 and bool */
    bool pow_mod;      /* pow and mod of lanes */
    bool outer;        /* the body holds inner loops (one at least), else none */
    bool gemm_extents; /* bounds proofs may use a GEMM's rows / columns as the
                          range of its variables */
    /* filled by kiln_vp_prove */
    uint8_t *bodyset;  /* per local: set in the body */
    uint8_t *setyet;   /* per local: set by a statement already checked */
    int8_t *dep;       /* per expression: -1 unknown, 0 lane-invariant, 1 varies with the lane */
    uint8_t *seen;     /* per expression: checks done (1, 2: value; 4, 8: any) */
    kiln_vp_ref *refs; /* the body's memory references */
    int nrefs, cap;
    int loops; /* inner loops met */
    bool oom;
} kiln_vproof;

/* Allocates the per-local and per-expression arrays of p (k set); false
 * when out of memory (kiln_vp_free frees what was made). */
bool kiln_vp_init(kiln_vproof *p);
void kiln_vp_free(kiln_vproof *p);
/* Whether loop p->s may be vector code (fills bodyset, refs, loops); false
 * with p->oom set when out of memory. */
bool kiln_vp_prove(kiln_vproof *p);
/* Whether expression e differs between lanes (iterations of the loop). */
bool kiln_vp_dep(kiln_vproof *p, int32_t e);
/* Whether index expressions e and f name the same element in every
 * iteration (the same expression, or equal affine forms). */
bool kiln_vp_same_element(const kiln_kernel *k, int32_t e, int32_t f);

#endif
