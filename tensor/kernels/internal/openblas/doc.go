// Package openblas binds OpenBLAS's cblas_sgemm for gopeft's comparison
// benchmarks only: it is empty unless built with -tags openblas (cgo,
// Debian's libopenblas-dev), so the normal build has no cgo.
package openblas
