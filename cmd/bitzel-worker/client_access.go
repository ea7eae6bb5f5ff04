package main

import (
	"github.com/bitzel/bitzel-worker/proto/configuration"
	"github.com/buildbarn/bb-storage/pkg/auth"
	auth_configuration "github.com/buildbarn/bb-storage/pkg/auth/configuration"
	"github.com/buildbarn/bb-storage/pkg/blobstore"
	"github.com/buildbarn/bb-storage/pkg/capabilities"
	"github.com/buildbarn/bb-storage/pkg/digest"
	bb_grpc "github.com/buildbarn/bb-storage/pkg/grpc"
	"github.com/buildbarn/bb-storage/pkg/program"
	authpb "github.com/buildbarn/bb-storage/pkg/proto/configuration/auth"
	"github.com/buildbarn/bb-storage/pkg/util"
	"google.golang.org/grpc"
)

// clientAccess is who may do what through serve's gRPC services, with
// bb-storage's authenticators and authorizers configured as bb_storage
// configures them. It guards the services only: the executor reads
// inputs and writes outputs and results through the unwrapped storage.
type clientAccess struct {
	authenticator                  bb_grpc.Authenticator // nil: every client
	acGet, acPut                   auth.Authorizer
	casGet, casPut, casFindMissing auth.Authorizer
}

var (
	allowAll = auth.NewStaticAuthorizer(func(digest.InstanceName) bool { return true })
	denyAll  = auth.NewStaticAuthorizer(func(digest.InstanceName) bool { return false })
)

// newClientAccess reads the access settings of a ServeConfiguration (c
// may be nil: zero-config serve). Everything left unset allows every
// client; actionCacheReadOnly denies UpdateActionResult to all.
func newClientAccess(c *configuration.ServeConfiguration, actionCacheReadOnly bool, group program.Group, grpcClientFactory bb_grpc.ClientFactory) (*clientAccess, error) {
	a := &clientAccess{}
	if policy := c.GetAuthenticationPolicy(); policy != nil {
		authenticator, _, _, err := bb_grpc.NewAuthenticatorFromConfiguration(policy, group, grpcClientFactory)
		if err != nil {
			return nil, util.StatusWrap(err, "authenticationPolicy")
		}
		a.authenticator = authenticator
	}
	for _, x := range []struct {
		dst    *auth.Authorizer
		config *authpb.AuthorizerConfiguration
		name   string
	}{
		{&a.acGet, c.GetActionCacheAuthorizers().GetGetAuthorizer(), "actionCacheAuthorizers.getAuthorizer"},
		{&a.acPut, c.GetActionCacheAuthorizers().GetPutAuthorizer(), "actionCacheAuthorizers.putAuthorizer"},
		{&a.casGet, c.GetContentAddressableStorageAuthorizers().GetGetAuthorizer(), "contentAddressableStorageAuthorizers.getAuthorizer"},
		{&a.casPut, c.GetContentAddressableStorageAuthorizers().GetPutAuthorizer(), "contentAddressableStorageAuthorizers.putAuthorizer"},
		{&a.casFindMissing, c.GetContentAddressableStorageAuthorizers().GetFindMissingAuthorizer(), "contentAddressableStorageAuthorizers.findMissingAuthorizer"},
	} {
		*x.dst = allowAll
		if x.config == nil {
			continue
		}
		authorizer, err := auth_configuration.DefaultAuthorizerFactory.NewAuthorizerFromConfiguration(x.config, group, grpcClientFactory)
		if err != nil {
			return nil, util.StatusWrap(err, x.name)
		}
		*x.dst = authorizer
	}
	if actionCacheReadOnly || c.GetActionCacheReadOnly() {
		a.acPut = denyAll
	}
	return a, nil
}

// serverOptions authenticate every RPC when a policy is configured.
func (a *clientAccess) serverOptions() []grpc.ServerOption {
	if a.authenticator == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(bb_grpc.NewAuthenticatingUnaryInterceptor(a.authenticator)),
		grpc.ChainStreamInterceptor(bb_grpc.NewAuthenticatingStreamInterceptor(a.authenticator)),
	}
}

// actionCache is what the ActionCache service may do with ac.
func (a *clientAccess) actionCache(ac blobstore.BlobAccess) blobstore.BlobAccess {
	return blobstore.NewAuthorizingBlobAccess(ac, a.acGet, a.acPut, allowAll)
}

// contentAddressableStorage is what the CAS and ByteStream services may
// do with cas.
func (a *clientAccess) contentAddressableStorage(cas blobstore.BlobAccess) blobstore.BlobAccess {
	return blobstore.NewAuthorizingBlobAccess(cas, a.casGet, a.casPut, a.casFindMissing)
}

// capabilities reports update_enabled only to clients the Action
// Cache's put authorizer lets write, as bb_storage does, so that Bazel
// does not try to upload results it would be refused.
func (a *clientAccess) capabilities(p capabilities.Provider) capabilities.Provider {
	return capabilities.NewActionCacheUpdateEnabledClearingProvider(p, a.acPut)
}
