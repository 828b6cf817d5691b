import numpy as np, sys
exec(open('/tmp/s14/exp/frontier2.py').read().split('for L in sys.argv')[0])
for L in sys.argv[1:]:
    Ac,Uc=load(f'/tmp/s14/exp/cal-L{L}.f32'); At,Ut=load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac,Uc,At,Ut=Ac[1:],Uc[1:],At[1:],Ut[1:]
    hc=Ac*Uc; ht=At*Ut
    mu=np.abs(Uc).mean(0); ma=np.abs(Ac).mean(0)
    ru=np.sqrt((Uc**2).mean(0)); ra=np.sqrt((Ac**2).mean(0))
    # conditional E[up^2 | act bucket] with 4 buckets by act quantiles per neuron
    preds={'upw':np.abs(At)*mu,'upw_rms':np.abs(At)*ru,'upf':np.abs(Ut)*ma,'upf_rms':np.abs(Ut)*ra}
    # conditional: bucket edges on |act| per neuron
    qs=np.quantile(np.abs(Ac),[0.25,0.5,0.75],axis=0)
    def bucket(A): 
        a=np.abs(A); return (a>qs[0]).astype(int)+(a>qs[1])+(a>qs[2])
    bc=bucket(Ac); cond=np.zeros((4,Ac.shape[1]))
    for b in range(4):
        m=(bc==b); cond[b]=np.sqrt(((Uc**2)*m).sum(0)/np.maximum(m.sum(0),1))
    bt=bucket(At); preds['upw_cond']=np.abs(At)*np.take_along_axis(cond,bt,0)
    qs2=np.quantile(np.abs(Uc),[0.25,0.5,0.75],axis=0)
    def bucket2(U):
        a=np.abs(U); return (a>qs2[0]).astype(int)+(a>qs2[1])+(a>qs2[2])
    bc=bucket2(Uc); cond2=np.zeros((4,Ac.shape[1]))
    for b in range(4):
        m=(bc==b); cond2[b]=np.sqrt(((Ac**2)*m).sum(0)/np.maximum(m.sum(0),1))
    preds['upf_cond']=np.abs(Ut)*np.take_along_axis(cond2,bucket2(Ut),0)
    frs={k:curve(s,ht,0) for k,s in preds.items()}
    levels=[min(e for e,b in frs['upw'] if b>=x) for x in (0.19,0.22,0.25)]
    for E in levels:
        print(f'L{L} err<={E:.4f}: '+'  '.join(f'{k} {100*at(f,E):.1f}%' for k,f in frs.items()), flush=True)
