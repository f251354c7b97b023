/* Makes a process's listeners on "any address" listen on loopback instead.

   Loaded with LD_PRELOAD into the local Flink job server's JVM only (see
   pipeline/runners.py). Beam's Java gRPC servers (job, artifact staging and
   the per-job Fn API servers) are built with NettyServerBuilder.forPort(port),
   which drops any host they are given, so no option can keep them off the
   network; this wraps bind() and turns 0.0.0.0 into 127.0.0.1, and :: into
   ::ffff:127.0.0.1 (or ::1 on an IPv6-only socket). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static bind_fn real_bind;
  if (!real_bind) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
  if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    struct sockaddr_in local;
    memcpy(&local, addr, sizeof local);
    if (local.sin_addr.s_addr == htonl(INADDR_ANY)) {
      local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      return real_bind(fd, (struct sockaddr *)&local, sizeof local);
    }
  } else if (addr && addr->sa_family == AF_INET6 &&
             len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 local;
    memcpy(&local, addr, sizeof local);
    if (IN6_IS_ADDR_UNSPECIFIED(&local.sin6_addr)) {
      int v6_only = 0;
      socklen_t size = sizeof v6_only;
      getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, &size);
      if (v6_only) local.sin6_addr = in6addr_loopback;
      else inet_pton(AF_INET6, "::ffff:127.0.0.1", &local.sin6_addr);
      return real_bind(fd, (struct sockaddr *)&local, sizeof local);
    }
  }
  return real_bind(fd, addr, len);
}
