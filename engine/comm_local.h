// What the one-host GPU transports (copy engines over NVLink, engine/comm_ce.h; host memory over PCIe,
// engine/comm_host.h) share: an owned MPI communicator and the check that a group's ranks are on one host.
#pragma once
#include <mpi.h>

#include <string>

#include "engine/check.h"

namespace vit {

constexpr int kMaxLocalRanks = 8;  // GPUs of one host

// An MPI communicator owned (freed on destruction, also when a constructor fails part way).
struct OwnedMpiComm {
  MPI_Comm c = MPI_COMM_NULL;
  OwnedMpiComm() = default;
  OwnedMpiComm(const OwnedMpiComm&) = delete;
  OwnedMpiComm& operator=(const OwnedMpiComm&) = delete;
  ~OwnedMpiComm() {
    if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
  }
};

// Fails (on every rank of `group` together) unless its n ranks share one host; `transport` names the setting.
inline void require_one_host(MPI_Comm group, int n, const std::string& transport) {
  int me = 0;
  MPI_CHECK(MPI_Comm_rank(group, &me));
  MPI_Comm local = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(group, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &local));
  int local_n = 0;
  MPI_CHECK(MPI_Comm_size(local, &local_n));
  MPI_CHECK(MPI_Comm_free(&local));
  VIT_REQUIRE(local_n == n && n <= kMaxLocalRanks, "distributed.transport = \"", transport, "\" needs every rank of ",
              "a shard group on one host (at most ", kMaxLocalRanks, " GPUs); this group of ", n, " ranks has ",
              local_n, " on this host: use transport = \"nccl\" or a dp_shard of the GPUs per host");
}

}  // namespace vit
